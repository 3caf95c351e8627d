"""The original Flask service's own tests (test_main.py in jannegpriv/task-management), with
their names and intent kept, as HTTP requests against this server. The original used Flask's
test client and an empty database per test; here the server is the real one and the database is
shared, so each test only looks at what it made."""
import requests

TODO = "TODO"
DONE = "DONE"


def test_create_task(base_url):
    """Test creating a new task."""
    response = requests.post(f"{base_url}/api/tasks", json={"title": "Test Task"}, timeout=10)
    assert response.status_code == 201
    assert response.json()["title"] == "Test Task"
    assert response.json()["status"] == TODO


def test_get_tasks(base_url):
    """Test getting all tasks."""
    response = requests.get(f"{base_url}/api/tasks", timeout=10)
    assert response.status_code == 200
    assert isinstance(response.json(), list)


def test_update_task(base_url):
    """Test updating a task."""
    # First create a task
    create_response = requests.post(f"{base_url}/api/tasks", json={"title": "Test Task"}, timeout=10)
    task_id = create_response.json()["id"]

    # Then update it
    update_response = requests.put(
        f"{base_url}/api/tasks/{task_id}", json={"title": "Updated Task", "status": DONE}, timeout=10
    )
    assert update_response.status_code == 200
    assert update_response.json()["title"] == "Updated Task"
    assert update_response.json()["status"] == DONE
